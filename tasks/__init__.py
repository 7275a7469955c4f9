"""Task adapters (training frameworks). Importing this package registers the built-in tasks."""
from . import single_modal  # noqa: F401
from . import multi_modal  # noqa: F401
from . import compression  # noqa: F401
from . import single_image  # noqa: F401
