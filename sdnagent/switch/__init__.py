"""The local switch: OVSDB (bridges, ports, Mirrors) and OpenFlow on brtap."""
