# twistd -ny bnproxy.tac: the same service as `twistd bnproxy`, configured
# from BNPROXY_* environment variables (see README.md).
from twisted.application.service import Application

from bnproxy.tap import Options, makeService

options = Options()
options.parseOptions([])  # everything comes from BNPROXY_* (and BNPROXY_CONFIG's file)
application = Application("bnproxy")
makeService(options).setServiceParent(application)
