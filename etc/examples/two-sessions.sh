#!/bin/sh
# The two-session example of Huawei Cloud's traffic-mirroring guide: inbound
# TCP to port 1234 and UDP to port 1235 of the VM 192.168.0.230 (iface-id
# vm-230), sent by 192.168.0.161, mirrored to two targets, first 96 bytes.
# target-01 is a VM vNIC (iface-id vm-164); target-02 receives VXLAN at
# $TARGET02_IP. Uses $TAPDB (or tapctl's default) like any tapctl command.
set -eu
: "${TARGET02_IP:=192.168.1.165}"

tapctl target-add target-01 --port vm-164 --enable
tapctl target-add target-02 --vxlan "$TARGET02_IP" --enable

tapctl filter-add filter-01
tapctl rule-add filter-01 inbound --priority 1 --action accept --protocol tcp \
    --src 192.168.0.161/32 --dst 192.168.0.230/32 --dst-port 1234-1234
tapctl filter-add filter-02
tapctl rule-add filter-02 inbound --priority 1 --action accept --protocol udp \
    --src 192.168.0.161/32 --dst 192.168.0.230/32 --dst-port 1235-1235

tapctl session-add session-01 --target target-01 --filter filter-01 --priority 1 --vni 1 \
    --packet-length 96 --enable
tapctl session-add session-02 --target target-02 --filter filter-02 --priority 2 --vni 2 \
    --packet-length 96 --enable

tapctl source-add session-01 --port vm-230 --direction in
tapctl source-add session-02 --port vm-230 --direction in
