"""The datasets forwardforward knows: file names, sizes, checksums, mirrors and metadata.

Provenance of the checksums:

- MNIST and Fashion-MNIST: sizes and sha256 computed from byte-exact copies of the original
  files (their md5s equal the published ones). The Fashion-MNIST sha256 values also equal
  tensorflow/datasets ``tensorflow_datasets/url_checksums/fashion_mnist.txt``. Their uncompressed
  forms (accepted in place of the ``.gz`` files, never downloaded): sizes, sha256 and md5 of the
  decompressed originals, computed from those byte-exact copies.
  KMNIST has no uncompressed form here: no digest of its decompressed files was at hand.
- KMNIST: sizes and sha256 from tensorflow/datasets ``tensorflow_datasets/url_checksums/kmnist.txt``
  (the same sha256 values appear in torchvision-ruby's ``kmnist.rb``); md5 from torchvision's
  ``KMNIST.resources``.
- CIFAR-10 (python version): sha256 from keras ``keras/src/datasets/cifar10.py`` (``file_hash``);
  size and md5 from the CIFAR-10 home page (www.cs.toronto.edu/~kriz/cifar.html).

Verification uses sha256 when a file has one and falls back to md5 otherwise (see
:func:`forwardforward.data.fetch.verify_file`); every file here has a sha256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from forwardforward.errors import ConfigError

__all__ = ["CATALOG", "DatasetSpec", "FileSpec", "dataset_names", "dataset_spec"]

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class FileSpec:
    """One downloadable file.

    Attributes:
        name: the file name, both on the mirrors and in the dataset's folder.
        size: the exact size in bytes.
        sha256: lowercase hex sha256 digest, or ``None`` when none is published (then ``md5`` is
            used to verify the file).
        mirrors: base URLs, tried in order; the download URL is ``mirror + name``.
        md5: lowercase hex md5 digest, if known.
        unpacked: the same data uncompressed, as many users keep it (torchvision's ``raw/``
            folders hold the IDX files without ``.gz``), with its own name, size and digest. It
            is accepted in place of this file but never downloaded.
    """

    name: str
    size: int
    sha256: str | None
    mirrors: tuple[str, ...]
    md5: str | None = None
    unpacked: FileSpec | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"bad file name {self.name!r}: expected a plain, non-hidden name")
        if self.size < 0:
            raise ValueError(f"{self.name}: size must be >= 0, got {self.size}")
        if self.sha256 is None and self.md5 is None:
            raise ValueError(f"{self.name}: give a sha256 or an md5 digest to verify it with")
        for algo, digest, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if digest is not None and (len(digest) != length or not _HEX.fullmatch(digest)):
                raise ValueError(
                    f"{self.name}: {algo} must be {length} lowercase hex digits, got {digest!r}"
                )

    @property
    def algorithm(self) -> Literal["sha256", "md5"]:
        """The hash used to verify this file: sha256 when known, else md5."""
        return "sha256" if self.sha256 is not None else "md5"

    @property
    def digest(self) -> str:
        """The expected hex digest for :attr:`algorithm`."""
        digest = self.sha256 if self.sha256 is not None else self.md5
        assert digest is not None  # guaranteed by __post_init__
        return digest

    def urls(self, mirrors: tuple[str, ...] | None = None) -> list[str]:
        """The download URLs, one per mirror (``mirrors`` overrides :attr:`mirrors`)."""
        bases = self.mirrors if mirrors is None else mirrors
        return [
            base if base.endswith("/" + self.name) else _join(base, self.name) for base in bases
        ]


def _join(base: str, name: str) -> str:
    return base + name if base.endswith("/") else f"{base}/{name}"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: where its files live and what they contain.

    Attributes:
        name: catalog key, e.g. ``"mnist"``.
        title: human-readable name, e.g. ``"Fashion-MNIST"``.
        folder: sub-folder of the data directory holding the files.
        files: role -> file. Roles are ``train_images``, ``train_labels``, ``test_images``,
            ``test_labels`` for IDX datasets and ``archive`` for CIFAR-10.
        format: ``"idx"`` (4 gzip-compressed IDX files) or ``"cifar10-python"`` (one tar.gz).
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        classes: class names, indexed by label.
        image_shape: ``(C, H, W)`` of one image.
        train_size: number of training examples.
        test_size: number of test examples.
        description, homepage, license, citation: short human-readable strings.
    """

    name: str
    title: str
    folder: str
    files: dict[str, FileSpec] = field(hash=False)
    format: Literal["idx", "cifar10-python"]
    num_classes: int
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    train_size: int
    test_size: int
    description: str
    homepage: str
    license: str
    citation: str

    def __post_init__(self) -> None:
        if len(self.classes) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.classes)} class names for {self.num_classes} classes"
            )


_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _idx_files(
    mirrors: tuple[str, ...],
    entries: dict[str, tuple[int, str, str]],
    unpacked: dict[str, tuple[int, str, str]] | None = None,
) -> dict[str, FileSpec]:
    """Build the 4 IDX file specs from ``role -> (size, sha256, md5)`` of the ``.gz`` files and,
    where known, of the uncompressed files (the same name without ``.gz``)."""

    def raw(role: str, fname: str) -> FileSpec | None:
        if unpacked is None:
            return None
        size, sha256, md5 = unpacked[role]
        return FileSpec(
            name=fname.removesuffix(".gz"), size=size, sha256=sha256, mirrors=(), md5=md5
        )

    return {
        role: FileSpec(
            name=fname,
            size=entries[role][0],
            sha256=entries[role][1],
            mirrors=mirrors,
            md5=entries[role][2],
            unpacked=raw(role, fname),
        )
        for role, fname in _IDX_FILES.items()
    }


_MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    folder="mnist",
    files=_idx_files(
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        {
            "train_images": (
                9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            ),
            "train_labels": (
                28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "d53e105ee54ea40749a09fcbcd1e9432",
            ),
            "test_images": (
                1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "9fb629c4189551a2d022fa330f9573f3",
            ),
            "test_labels": (
                4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        },
        # the uncompressed files: sizes and sha256 of the decompressed originals
        {
            "train_images": (
                47040016,
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "6bbc9ace898e44ae57da46a324031adb",
            ),
            "train_labels": (
                60008,
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "a25bea736e30d166cdddb491f175f624",
            ),
            "test_images": (
                7840016,
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "2646ac647ad5339dbf082846283269ea",
            ),
            "test_labels": (
                10008,
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                "27ae3e4e09519cfbb04c329615203637",
            ),
        },
    ),
    format="idx",
    num_classes=10,
    classes=tuple(str(d) for d in range(10)),
    image_shape=(1, 28, 28),
    train_size=60000,
    test_size=10000,
    description="Handwritten digits 0-9, 28x28 greyscale.",
    homepage="http://yann.lecun.com/exdb/mnist/",
    license="CC BY-SA 3.0 (as stated by torchvision and TFDS)",
    citation=(
        "Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, Gradient-based learning applied to "
        "document recognition, Proc. IEEE 86(11), 1998."
    ),
)

_FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    title="Fashion-MNIST",
    folder="fashion_mnist",
    files=_idx_files(
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        {
            "train_images": (
                26421880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            ),
            "train_labels": (
                29515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "25c81989df183df01b3e8a0aad5dffbe",
            ),
            "test_images": (
                4422102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "bef4ecab320f06d8554ea6380940ec79",
            ),
            "test_labels": (
                5148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        },
        # the uncompressed files: sizes and sha256 of the decompressed originals
        {
            "train_images": (
                47040016,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            ),
            "train_labels": (
                60008,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "9018921c3c673c538a1fc5bad174d6f9",
            ),
            "test_images": (
                7840016,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "8181f5470baa50b63fa0f6fddb340f0a",
            ),
            "test_labels": (
                10008,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                "15d484375f8d13e6eb1aabb0c3f46965",
            ),
        },
    ),
    format="idx",
    num_classes=10,
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    image_shape=(1, 28, 28),
    train_size=60000,
    test_size=10000,
    description="Zalando article images in 10 clothing classes, 28x28 greyscale.",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT (Copyright (c) 2017 Zalando SE)",
    citation=(
        "H. Xiao, K. Rasul and R. Vollgraf, Fashion-MNIST: a Novel Image Dataset for "
        "Benchmarking Machine Learning Algorithms, arXiv:1708.07747, 2017."
    ),
)

_KMNIST = DatasetSpec(
    name="kmnist",
    title="Kuzushiji-MNIST",
    folder="kmnist",
    files=_idx_files(
        (
            "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        {
            "train_images": (
                18165135,
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                "bdb82020997e1d708af4cf47b453dcf7",
            ),
            "train_labels": (
                29497,
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                "e144d726b3acfaa3e44228e80efcd344",
            ),
            "test_images": (
                3041136,
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                "5c965bf0a639b31b8f53240b1b52f4d7",
            ),
            "test_labels": (
                5120,
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ),
        },
    ),
    format="idx",
    num_classes=10,
    # One representative hiragana per row of the syllabary (お き す つ な は ま や れ を).
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    image_shape=(1, 28, 28),
    train_size=60000,
    test_size=10000,
    description="Cursive Japanese (kuzushiji) hiragana in 10 classes, 28x28 greyscale.",
    homepage="https://codh.rois.ac.jp/kmnist/",
    license="CC BY-SA 4.0 (KMNIST Dataset, created by CODH, adapted from Kuzushiji Dataset)",
    citation=(
        "T. Clanuwat, M. Bober-Irizar, A. Kitamoto, A. Lamb, K. Yamamoto and D. Ha, Deep "
        "Learning for Classical Japanese Literature, arXiv:1812.01718, 2018."
    ),
)

_CIFAR10 = DatasetSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar10",
    files={
        "archive": FileSpec(
            name="cifar-10-python.tar.gz",
            size=170498071,
            sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            mirrors=("https://www.cs.toronto.edu/~kriz/",),
            md5="c58f30108f718f92721af3b95e74349a",
        )
    },
    format="cifar10-python",
    num_classes=10,
    classes=(
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    image_shape=(3, 32, 32),
    train_size=50000,
    test_size=10000,
    description="Tiny colour photos in 10 classes, 32x32 RGB (the 'python version' archive).",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license="no license stated by the authors; cite the report below",
    citation="A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009.",
)

#: Every known dataset, by name.
CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (_MNIST, _FASHION_MNIST, _KMNIST, _CIFAR10)
}


def _squash(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


def dataset_names() -> tuple[str, ...]:
    """The catalog's dataset names, sorted."""
    return tuple(sorted(CATALOG))


def dataset_spec(name: str) -> DatasetSpec:
    """Look up a dataset by name.

    Case, ``-`` and ``_`` do not matter: ``"Fashion-MNIST"``, ``"fashion_mnist"`` and
    ``"cifar-10"`` are all accepted.

    Raises:
        ConfigError: the name is not in :data:`CATALOG`; the message lists the known names.
    """
    wanted = _squash(name)
    spec = next((s for key, s in CATALOG.items() if _squash(key) == wanted), None)
    if spec is None:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}")
    return spec
