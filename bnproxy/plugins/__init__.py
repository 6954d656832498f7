"""Drop-in middleware plugins.

Any module in a ``bnproxy/plugins/`` directory on ``sys.path`` that holds
module-level ``IMiddlewareFactory`` providers is found by
``twisted.plugin.getPlugins``. The built-in middlewares are registered here
exactly as third-party ones are.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
