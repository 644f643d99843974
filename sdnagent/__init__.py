"""sdnagent: VPC traffic mirroring for clouds that run Open vSwitch."""
import os
import warnings

# The ovs library imports eventlet (an os-ken dependency) only to detect it;
# we never monkey-patch, so eventlet's green DNS resolver, which imports all of
# dnspython (a third of a second per tapctl command), is never used.
os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")

# The ovs library imports eventlet (an os-ken dependency) only to detect it;
# we never use eventlet, so its deprecation notice is noise for operators.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
