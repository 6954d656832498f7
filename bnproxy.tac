# twistd -ny bnproxy.tac: the same service as `twistd bnproxy`, configured
# from BNPROXY_* environment variables (see README.md).
import os

from twisted.application.service import Application

from bnproxy.tap import Options, args_from_env, makeService

options = Options()
options.parseOptions(args_from_env(os.environ))
application = Application("bnproxy")
makeService(options).setServiceParent(application)
