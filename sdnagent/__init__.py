"""sdnagent: VPC traffic mirroring for clouds that run Open vSwitch."""
import warnings

# The ovs library imports eventlet (an os-ken dependency) only to detect it;
# we never use eventlet, so its deprecation notice is noise for operators.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
