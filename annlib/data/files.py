"""Where the official EMNIST files live, what they must look like, and how to fetch them."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from annlib.paths import project_root

log = logging.getLogger(__name__)

SPLITS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")
PARTS = ("train", "test")
KINDS = ("images", "labels")
ENV_VAR = "ANNLIB_DATA"

GZIP_ZIP_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
GZIP_ZIP_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"

# Images per official partition (Cohen et al. 2017, table II).
COUNTS = {
    ("balanced", "train"): 112_800,
    ("balanced", "test"): 18_800,
    ("byclass", "train"): 697_932,
    ("byclass", "test"): 116_323,
    ("bymerge", "train"): 697_932,
    ("bymerge", "test"): 116_323,
    ("digits", "train"): 240_000,
    ("digits", "test"): 40_000,
    ("letters", "train"): 124_800,
    ("letters", "test"): 20_800,
    ("mnist", "train"): 60_000,
    ("mnist", "test"): 10_000,
}

# Size in bytes (None where no source gives it) and sha256 of each member of NIST's gzip.zip, as
# listed by Git LFS pointers of a public mirror and by a public loader's hash list, which agree.
OFFICIAL: dict[str, tuple[int | None, str]] = {
    "emnist-balanced-test-images-idx3-ubyte.gz": (
        4714707,
        "117fc12b015e37ea98bfb2cbba3f77c3782c056cdbd219b87abfc8661d7135db",
    ),
    "emnist-balanced-test-labels-idx1-ubyte.gz": (
        13504,
        "a67cac948379b67270b9a4d0a01c8ec661598accf2f2b1964340b7c83cb175cd",
    ),
    "emnist-balanced-train-images-idx3-ubyte.gz": (
        28207740,
        "74295e75e4e9fa2c102147460ee7eb763653d5132d883a84fb88932bfb8d2db4",
    ),
    "emnist-balanced-train-labels-idx1-ubyte.gz": (
        80618,
        "b46d41e5156a0a8aaaa4d18979fdd1588850fa8571018acffd5d93b325a7d6ed",
    ),
    "emnist-byclass-test-images-idx3-ubyte.gz": (
        28908322,
        "5ec835bd5d5b1a66378a132e727fef20fe994b3cc666899befcca5ac766f50cd",
    ),
    "emnist-byclass-test-labels-idx1-ubyte.gz": (
        81839,
        "501e305eeeacb093b162592d80e8a2632040872360fa6d85cfcb2200d91ca92a",
    ),
    "emnist-byclass-train-images-idx3-ubyte.gz": (
        173367313,
        "9e21987f03a6eb8b870187e785883ddad96947299587908f1a7ec2ca0f4be5f0",
    ),
    "emnist-byclass-train-labels-idx1-ubyte.gz": (
        491603,
        "f7ef403d48dc18a89dae0d83d11ee69cecb6e1c12c3a961d03712e495c02a8fa",
    ),
    "emnist-bymerge-test-images-idx3-ubyte.gz": (
        28905295,
        "5e5815ec1b522089134435f7c55e75a00960b58414793593ffff23efc0821683",
    ),
    "emnist-bymerge-test-labels-idx1-ubyte.gz": (
        79351,
        "8bda1516255683ba9071e141947ca0c91a911176065cdd6259b0b4d8dc5b5f35",
    ),
    "emnist-bymerge-train-images-idx3-ubyte.gz": (
        None,
        "39bf8c68037dad40db35348895f7e4e056e8c0a005ab78869c9fbc2c96e947be",
    ),
    "emnist-bymerge-train-labels-idx1-ubyte.gz": (
        None,
        "2c47293b9e62d6abf6ad05fbf67e40baa32adfd380b8d7b44dcc35534b64e1f1",
    ),
    "emnist-digits-test-images-idx3-ubyte.gz": (
        9908519,
        "20ebe43509264f7639d37c835a3f0b009e90b29e00a099a03101abe1644a3f63",
    ),
    "emnist-digits-test-labels-idx1-ubyte.gz": (
        19960,
        "bad1834c45d5988e270b99d43b13edc3fd898f658ffbc2caf2846ef27f7b05b0",
    ),
    "emnist-digits-train-images-idx3-ubyte.gz": (
        59515779,
        "f7c95004d14d81af89522e67d8f0c781dfb3bd544181c81bfe1eb6b41c35b726",
    ),
    "emnist-digits-train-labels-idx1-ubyte.gz": (
        113859,
        "6638a6ff5fe2eefd9cca2471995b46c82986b8e4b2a70d2f5ce8e05d7edb319e",
    ),
    "emnist-letters-test-images-idx3-ubyte.gz": (
        5039157,
        "50f0e93d75b99b463e9760b8345866f22587fa2c2fba472730a5ba09c693412d",
    ),
    "emnist-letters-test-labels-idx1-ubyte.gz": (
        144,
        "924955c31fe7fd809b7303b5c0141282955f4b8390c74cdfd5d80435e0f4b4cb",
    ),
    "emnist-letters-train-images-idx3-ubyte.gz": (
        30804864,
        "6288f418a917e007bf5fddb823a2dc7a5c6a35031401b93292a539cb12bd881f",
    ),
    "emnist-letters-train-labels-idx1-ubyte.gz": (
        79283,
        "9759af91ea6bccdf07a6040fd085861f2ec88e37f7c3f5760f6feb57106fbe5c",
    ),
    "emnist-mnist-test-images-idx3-ubyte.gz": (
        2484884,
        "b25640fa9e356c618132f5df347c95ef5bae6d9c2596be1de40f7e0ae1c3eac6",
    ),
    "emnist-mnist-test-labels-idx1-ubyte.gz": (
        5144,
        "bcc5385d38f083dba046f5f756e99b32f5ea7fad122c6243c71c2239873065ca",
    ),
    "emnist-mnist-train-images-idx3-ubyte.gz": (
        14873795,
        "5f9942f441031c0f1f2e4d162059fd6e19ea808b34c328b6d16cab0ed24c78f2",
    ),
    "emnist-mnist-train-labels-idx1-ubyte.gz": (
        29480,
        "00c6d3c2342fdffb1711e0b5656cac4ce5862d2826399d383a9bac07d612e9f8",
    ),
    "emnist-balanced-mapping.txt": (
        328,
        "956dc507bf69e9f31f4e3e876d22ec66124aa229b5d0bd65ab8956a8044d3ede",
    ),
    "emnist-byclass-mapping.txt": (
        447,
        "68fa9091ed325830418b5a8d732f32316e54a480b9f8994a161abb4eddd0d078",
    ),
    "emnist-bymerge-mapping.txt": (
        328,
        "956dc507bf69e9f31f4e3e876d22ec66124aa229b5d0bd65ab8956a8044d3ede",
    ),
    "emnist-digits-mapping.txt": (
        60,
        "6d157dc46a7b1c80d630f4fed571d9964db37ee1669cac403b6db2c8bb109d94",
    ),
    "emnist-letters-mapping.txt": (
        274,
        "a56cb9a31c08e3251a61ea7b1ec8bc4f4cabdc1edf3128508d3a485ad53fa456",
    ),
    "emnist-mnist-mapping.txt": (
        60,
        "6d157dc46a7b1c80d630f4fed571d9964db37ee1669cac403b6db2c8bb109d94",
    ),
}

HOW_TO_GET = (
    "Get NIST's EMNIST archive gzip.zip (annlib.data.download_emnist(), or by hand from "
    f"{GZIP_ZIP_URL}) and point annlib at the folder holding its .gz files: pass data_dir, "
    f"or set {ENV_VAR}, or put them in data/."
)


class EmnistFileError(RuntimeError):
    """An EMNIST file is missing, truncated, corrupt or not what its name says."""


@dataclass(frozen=True)
class FileCheck:
    """Outcome of checking one file against the official table."""

    name: str
    path: Path | None
    size: int | None
    sha256: str | None
    status: str


def file_name(split: str, part: str, kind: str) -> str:
    """Return the official name of one file, e.g. emnist-mnist-test-labels-idx1-ubyte.gz."""
    check_split(split)
    if part not in PARTS:
        raise ValueError(f"Unknown partition {part!r}: use one of {', '.join(PARTS)}.")
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}.")
    idx = "idx3" if kind == "images" else "idx1"
    return f"emnist-{split}-{part}-{kind}-{idx}-ubyte.gz"


def mapping_name(split: str) -> str:
    """Return the official name of a split's mapping file."""
    check_split(split)
    return f"emnist-{split}-mapping.txt"


def check_split(split: str) -> None:
    """Raise a ValueError naming the valid splits if split is not one of them."""
    if split not in SPLITS:
        raise ValueError(f"Unknown EMNIST split {split!r}: use one of {', '.join(SPLITS)}.")


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Return the EMNIST folder: the argument, else $ANNLIB_DATA, else the project's data/."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return project_root() / "data"


def candidates(root: Path, name: str) -> list[Path]:
    """Return the places a file may sit: flat, NIST's gzip/ folder, torchvision's EMNIST/raw/."""
    plain = name.removesuffix(".gz")
    folders = [root, root / "gzip", root / "EMNIST" / "raw", root / "raw"]
    return [folder / n for folder in folders for n in dict.fromkeys([name, plain])]


def find_file(root: Path, name: str) -> Path | None:
    """Return the first existing location of an official file under root, or None."""
    return next((p for p in candidates(root, name) if p.is_file()), None)


def locate(split: str, part: str, kind: str, root: str | os.PathLike | None = None) -> Path:
    """Return the path of one official file; raise EmnistFileError if it is nowhere."""
    root = data_dir(root)
    name = file_name(split, part, kind)
    path = find_file(root, name)
    if path is None:
        raise EmnistFileError(
            f"EMNIST file {name} not found under {root} (looked in ., gzip/, EMNIST/raw/, raw/). "
            + HOW_TO_GET
        )
    return path


def sha256_of(data: bytes) -> str:
    """Return the hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def verify_bytes(name: str, path: Path, data: bytes) -> None:
    """Raise EmnistFileError if a .gz file's size or sha256 differs from the official one.

    Uncompressed files (torchvision's layout) have no official hash; their header and length are
    checked when they are parsed instead.
    """
    if path.name != name or name not in OFFICIAL:
        return
    size, digest = OFFICIAL[name]
    if size is not None and len(data) != size:
        raise EmnistFileError(
            f"{path} has {len(data):,} bytes but the official {name} has {size:,}: the file is "
            "truncated or not the official one. Delete it and fetch it again. " + HOW_TO_GET
        )
    if sha256_of(data) != digest:
        raise EmnistFileError(
            f"{path} does not match the official sha256 of {name}: the file is corrupt. "
            "Delete it and fetch it again. " + HOW_TO_GET
        )


def check_files(root: str | os.PathLike | None = None) -> list[FileCheck]:
    """Return one FileCheck per official file: found or missing, and whether its sha256 matches."""
    root = data_dir(root)
    names = [file_name(s, p, k) for s in SPLITS for p in PARTS for k in KINDS]
    names += [mapping_name(s) for s in SPLITS]
    checks = []
    for name in names:
        path = find_file(root, name)
        if path is None:
            checks.append(FileCheck(name, None, None, None, "missing"))
            continue
        data = path.read_bytes()
        digest = sha256_of(data)
        official = OFFICIAL.get(name)
        if path.name != name or official is None:
            status = "present (no official hash to compare)"
        elif official[1] == digest and official[0] in (None, len(data)):
            status = "ok"
        else:
            status = "CORRUPT: size or sha256 differs from the official file"
        checks.append(FileCheck(name, path, len(data), digest, status))
    return checks


def download_emnist(
    root: str | os.PathLike | None = None,
    url: str = GZIP_ZIP_URL,
    md5: str | None = GZIP_ZIP_MD5,
    splits: tuple[str, ...] = SPLITS,
) -> Path:
    """Download NIST's gzip.zip, verify it, and extract the chosen splits' files into root/.

    The archive's md5 is checked by torchvision's downloader and each extracted file against its
    official sha256. All files are checked in a temporary folder first and moved into root only
    when every one has passed, so a bad archive leaves nothing behind.
    """
    from torchvision.datasets.utils import download_url

    root = data_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    wanted = {file_name(s, p, k) for s in splits for p in PARTS for k in KINDS}
    wanted |= {mapping_name(s) for s in splits}

    with tempfile.TemporaryDirectory(dir=root) as tmp:
        download_url(url, tmp, filename="gzip.zip", md5=md5)
        archive = Path(tmp) / "gzip.zip"
        if not zipfile.is_zipfile(archive):
            raise EmnistFileError(f"{url} did not give a zip archive. " + HOW_TO_GET)
        staged = Path(tmp) / "staged"
        staged.mkdir()
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                name = Path(member).name
                if name in wanted:
                    data = zf.read(member)
                    verify_bytes(name, Path(name), data)
                    (staged / name).write_bytes(data)

        found = sorted(p.name for p in staged.iterdir())
        for name in found:
            os.replace(staged / name, root / name)
        log.info("extracted %d files into %s", len(found), root)
        missing = sorted(wanted - set(found))
        if missing:
            log.warning("the archive lacks %d wanted files: %s", len(missing), ", ".join(missing))
    return root
