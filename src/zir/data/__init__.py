"""zir.data: sources, built-in datasets, transforms and masking, tokenizer, the view plan and collation.

Start with `open_source(spec)` (a built-in name such as `shapes` or a path), a `ViewPlan` (the views
the objectives need) and `make_loader(source, plan, batch_size)`, which yields typed `Batch`es.
"""

from zir.data.builtin import SOURCES, ShapesSource, cifar10, digits, fashion_mnist, flickr8k, open_source, register_source
from zir.data.inspect import inspect_source, summary_lines
from zir.data.loader import Loader, make_loader
from zir.data.masking import Mask, block_mask, make_mask, random_mask
from zir.data.plan import Batch, ViewCollate, ViewPlan
from zir.data.views import DEFAULT_MASK, MaskSpec, View
from zir.data.shapes import generate_shapes, load_shapes
from zir.data.shards import ShardSource, expand_braces
from zir.data.sources import CaptionTableSource, DataReport, ImageFolderSource, MapSource, Sample, Source
from zir.data.tokenizer import TextTokenizer, load_tokenizer, train_bpe
from zir.data.transforms import Augment, normalize, pipeline

__all__ = [
    "SOURCES",
    "Augment",
    "Batch",
    "CaptionTableSource",
    "DataReport",
    "ImageFolderSource",
    "Loader",
    "MapSource",
    "DEFAULT_MASK",
    "Mask",
    "MaskSpec",
    "Sample",
    "ShapesSource",
    "ShardSource",
    "Source",
    "TextTokenizer",
    "ViewCollate",
    "View",
    "ViewPlan",
    "block_mask",
    "cifar10",
    "digits",
    "expand_braces",
    "fashion_mnist",
    "flickr8k",
    "generate_shapes",
    "inspect_source",
    "load_shapes",
    "load_tokenizer",
    "make_loader",
    "make_mask",
    "normalize",
    "open_source",
    "pipeline",
    "random_mask",
    "register_source",
    "summary_lines",
    "train_bpe",
]
