# The names of `engine`, typed; lazy_loader.attach_stub reads these imports to import
# each name from its module on first use (`__init__.py`).

from ._core.bundle import PolicyBundle as PolicyBundle
from ._core.bundle_compare import BundleComparison as BundleComparison
from ._core.bundle_compare import compare_bundles as compare_bundles
from ._core.evaluate import Engine as Engine
from ._core.models import Decision as Decision
from ._core.models import EntityUID as EntityUID
from ._core.models import PolicyError as PolicyError
from ._core.models import Request as Request
from ._core.placement import DeniedSite as DeniedSite
from ._core.placement import PlacedSite as PlacedSite
from ._core.placement import Placement as Placement
from ._core.placement import Workload as Workload
from ._core.policies import Policy as Policy
from ._core.sites import Site as Site
from ._errors import BundleError as BundleError
from ._errors import EngineError as EngineError
from ._errors import RequestError as RequestError
from ._errors import SignatureError as SignatureError
from ._service.bundle_watch import BundleWatcher as BundleWatcher
