"""mechref: find, remove, add and explain the refusal direction of chat language models.

Built on TransformerLens 4 (``TransformerBridge``). Start with::

    import mechref
    model = mechref.load_model()            # the embedded Qwen2.5-Coder-1.5B-Instruct
"""

__version__ = "0.1.0"

from mechref.chat import ChatFormatter
from mechref.models import MechrefModel, load_model, wrap_hf_model

__all__ = ["ChatFormatter", "MechrefModel", "__version__", "load_model", "wrap_hf_model"]
