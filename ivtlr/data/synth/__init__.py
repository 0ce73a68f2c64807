"""Synthetic visual multi-step reasoning benchmark ("dot chains" and "arrow grids"), written in M3CoT's schema.

Each image is a ``grid x grid`` board of coloured cells, one cell per Qwen2-VL merged image token (28 px = two
14 px patches merged 2x2), so a 3x3 board is an 84x84 image and 9 image tokens. Exactly one cell is white and
every question starts there. Two families of boards (``SynthConfig.family``):

``dots`` (the default): every cell has a distinct fill colour and a centred square dot whose colour is the fill of
*another* cell; following a dot means going to the cell filled with the dot's colour (content-addressed: no
spatial arithmetic). Start at the white cell, follow the dots ``hops`` times, then ask about the reached cell:

- ``dot-colour`` (domain ``synthetic-navigation``): what colour is that cell's dot?
- ``dot-count``  (domain ``synthetic-counting``):   how many cells have a dot of that colour?
- ``dot-match``  (domain ``synthetic-matching``):   which other cell has a dot of that colour? (its fill colour)

``arrows``: cells carry black arrows pointing at a neighbour; following an arrow means moving to that neighbour:

- ``arrow-colour``    (domain ``synthetic-navigation``): what colour is that cell?
- ``arrow-direction`` (domain ``synthetic-navigation``): which way does that cell's own arrow point?
- ``colour-count``    (domain ``synthetic-counting``):   how many cells on the board have that cell's colour?

The dots family is the default because a tiny from-scratch Qwen2-VL (RoPE only, no absolute positions) did not
learn the arrows' "move to the neighbour" step in the CPU budget, while a dot-chain prototype learned quickly
(docs/synthetic-task.md).

The rationale has exactly three sentences joined by ". " (the IVT-LR splitter turns it into three steps), each
reading a different cell (the white cell, the first cell reached, the last one); the last one also names the
option letter ("... and pink is option (A)") so that the content-to-letter mapping is an explicit, learnable step.
Answer letters are exactly balanced, answer contents uniform, options drawn symmetrically from the same vocabulary
(text-only models sit at chance), and board statistics are balanced so that only following the chain answers
reliably. See docs/synthetic-task.md for the design.

This module generates, renders and saves the data (``generate``, ``synth_main``); it is not the task object that
formats prompts and scores answers (that lives in ``ivtlr.tasks``). Everything is a pure function of the seed.

The package, one module per job: ``config`` (palettes, constants, ``SynthConfig``), ``scene`` (boards, questions,
the solver), ``chain`` (what both families share), ``dots`` and ``arrows`` (the two families), ``examples``
(``make_example``), ``render`` (the image), ``truth`` (ground truth read back from an image), ``writer`` (the
dataset in M3CoT's schema), ``cli`` (``ivtlr data synth``) and ``docs`` (the documentation's examples). The names
below are its public interface.
"""

from __future__ import annotations

from .config import (  # noqa: F401
    ARROW_KINDS,
    ARROW_RGB,
    BORDER_RGB,
    DIRECTIONS,
    DOMAIN,
    DOT_BORDER_RGB,
    DOT_KINDS,
    DOT_PALETTE,
    DOT_PALETTES,
    DOT_STYLES,
    FAMILIES,
    KINDS,
    LETTERS,
    PALETTE,
    SPLITS,
    START_COLOUR,
    START_RGB,
    STEP_STYLES,
    SynthConfig,
    WHEEL_PALETTE,
)
from .scene import (  # noqa: F401
    Example,
    Scene,
    solve,
)
from .chain import (  # noqa: F401
    _article,
)
from .examples import (  # noqa: F401
    make_example,
)
from .render import (  # noqa: F401
    _png_bytes,
    dot_box,
    render,
)
from .truth import (  # noqa: F401
    read_scene,
    step_truth,
    StepTruth,
)
from .writer import (  # noqa: F401
    CONFIG_FILE,
    generate,
    m3cot_features,
    read_config,
    text_corpus,
    to_record,
)
from .cli import (  # noqa: F401
    synth_main,
)
from .docs import (  # noqa: F401
    doc_block,
    DOC_EXAMPLES,
    render_examples,
    update_docs,
)
