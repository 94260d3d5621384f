package hostsnap

import "github.com/vishvananda/netlink"

// familyAll lists addresses and routes of every family.
const familyAll = netlink.FAMILY_ALL
