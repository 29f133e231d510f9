#!/bin/sh
# Elastic-IP NAT for cloudctl with nftables, usable as both of elastic_ips' scripts:
#
#   eip-nft.sh ELASTIC_IP PRIVATE_IP NETWORK_TEMPLATE_BASE64    associate
#   eip-nft.sh ELASTIC_IP                                       disassociate
#
# It keeps its own table `ip cloudctl_eip` (CLOUDCTL_EIP_TABLE overrides the name) holding
#   map eip_dnat  ELASTIC_IP -> PRIVATE_IP   used in prerouting (traffic arriving for the address)
#                                            and output (traffic from this host to it);
#   map eip_snat  PRIVATE_IP -> ELASTIC_IP   used in postrouting for traffic the instance sends
#                                            out, except to the set eip_nets (the instances'
#                                            own subnets, taken from the network template).
# Both calls are idempotent and each change is one nft transaction: associating again, or to
# another private address, replaces the entry; disassociating an unknown address does nothing.
# The host must route between the public side and the instances' bridge (net.ipv4.ip_forward=1)
# and receive the elastic addresses' traffic (a route, or the addresses on its uplink or proxy ARP).
# If `conntrack` is installed, the address's tracked connections are dropped on disassociate
# so existing flows stop at once rather than when they time out.
set -eu

TABLE=${CLOUDCTL_EIP_TABLE:-cloudctl_eip}
case $TABLE in *[!A-Za-z0-9_]*|'') echo "eip-nft: bad table name" >&2; exit 2 ;; esac

is_ipv4() {
    case $1 in *[!0-9.]*|'') return 1 ;; esac
    old_ifs=$IFS; IFS=.; set -- $1; IFS=$old_ifs
    [ $# -eq 4 ] || return 1
    for o in "$@"; do
        [ -n "$o" ] && [ "$o" -le 255 ] 2>/dev/null || return 1
    done
}

# The value mapped to $2 in map $1, or nothing.
lookup() {
    nft get element ip "$TABLE" "$1" "{ $2 }" 2>/dev/null \
        | sed -n 's/.*elements = { [0-9.]* : \([0-9.]*\) }.*/\1/p'
}

table_exists() {
    nft list table ip "$TABLE" >/dev/null 2>&1
}

# Ops removing ELASTIC_IP's entries (and its private address's SNAT if it points back at it).
# (POSIX sh has no local variables: each function keeps to its own names.)
removals() {
    r_eip=$1
    r_priv=$(lookup eip_dnat "$r_eip")
    if [ -n "$r_priv" ]; then
        echo "delete element ip $TABLE eip_dnat { $r_eip }"
        if [ "$(lookup eip_snat "$r_priv")" = "$r_eip" ]; then
            echo "delete element ip $TABLE eip_snat { $r_priv }"
        fi
    fi
}

associate() {
    eip=$1 priv=$2
    subnet=$(printf '%s' "$3" | base64 -d 2>/dev/null | sed -n 's/.*"subnet":"\([0-9./]*\)".*/\1/p')
    ops=$(
        echo "add table ip $TABLE"
        echo "add map ip $TABLE eip_dnat { type ipv4_addr : ipv4_addr; }"
        echo "add map ip $TABLE eip_snat { type ipv4_addr : ipv4_addr; }"
        echo "add set ip $TABLE eip_nets { type ipv4_addr; flags interval; }"
        echo "add chain ip $TABLE prerouting { type nat hook prerouting priority dstnat; policy accept; }"
        echo "add chain ip $TABLE output { type nat hook output priority -100; policy accept; }"
        echo "add chain ip $TABLE postrouting { type nat hook postrouting priority srcnat; policy accept; }"
        echo "flush chain ip $TABLE prerouting"
        echo "flush chain ip $TABLE output"
        echo "flush chain ip $TABLE postrouting"
        echo "add rule ip $TABLE prerouting dnat to ip daddr map @eip_dnat"
        echo "add rule ip $TABLE output dnat to ip daddr map @eip_dnat"
        echo "add rule ip $TABLE postrouting ip daddr != @eip_nets snat to ip saddr map @eip_snat"
        if table_exists; then
            removals "$eip"
            # $priv's SNAT goes unless `removals` already took it (it pointed back at $eip).
            cur=$(lookup eip_snat "$priv")
            if [ -n "$cur" ] && ! { [ "$cur" = "$eip" ] && [ "$(lookup eip_dnat "$eip")" = "$priv" ]; }; then
                echo "delete element ip $TABLE eip_snat { $priv }"
            fi
        fi
        case $subnet in
            */*) echo "add element ip $TABLE eip_nets { $subnet }" ;;
        esac
        echo "add element ip $TABLE eip_dnat { $eip : $priv }"
        echo "add element ip $TABLE eip_snat { $priv : $eip }"
    )
    printf '%s\n' "$ops" | nft -f -
}

disassociate() {
    d_eip=$1
    table_exists || return 0
    ops=$(removals "$d_eip")
    if [ -n "$ops" ]; then
        printf '%s\n' "$ops" | nft -f -
    fi
    if command -v conntrack >/dev/null 2>&1; then
        conntrack -D --orig-dst "$d_eip" >/dev/null 2>&1 || true
        conntrack -D --reply-dst "$d_eip" >/dev/null 2>&1 || true
    fi
}

case $# in
    3)
        is_ipv4 "$1" && is_ipv4 "$2" || { echo "eip-nft: bad address in '$1' '$2'" >&2; exit 2; }
        associate "$1" "$2" "$3"
        ;;
    1)
        is_ipv4 "$1" || { echo "eip-nft: bad address '$1'" >&2; exit 2; }
        disassociate "$1"
        ;;
    *)
        echo "usage: $0 ELASTIC_IP PRIVATE_IP NETWORK_TEMPLATE_BASE64 | $0 ELASTIC_IP" >&2
        exit 2
        ;;
esac
