package runner

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/labctl/labctl/labs"
	"github.com/labctl/labctl/runner/sandbox"
)

// Ledger kinds owned by the runner (the sandbox has its own).
const (
	kindLink      = "link"
	kindAddrBlock = "addrblock"
	kindFault     = "fault"
)

// addrBlocksFile maps instance id -> x of its 10.x.0.0/16 block.
const addrBlocksFile = "addrblocks.json"

// linkPlan is the addressing of one link, decided before any host exists
// so host files can use the addresses.
type linkPlan struct {
	Index  int
	A, B   LinkAddress
	Subnet *net.IPNet
}

// needsBlock reports whether any link takes its subnet from the
// instance's allocated block.
func needsBlock(lab *labs.Lab) bool {
	for _, l := range lab.Links {
		if l.Subnet == "" {
			return true
		}
	}
	return false
}

// allocateBlock picks x so 10.x.0.0/16 is used by no other live instance
// of the state root and overlaps no route or address of the machine. It
// is recorded in the ledger before it is written to the allocation file.
func (in *Instance) allocateBlock() error {
	return withRootLock(func(root string) error {
		blocks, err := readBlocks(root)
		if err != nil {
			return err
		}
		busy, err := machineNets()
		if err != nil {
			return err
		}
		x, err := pickBlock(blocks, busy)
		if err != nil {
			return err
		}
		if _, err := in.ledger.create(kindAddrBlock, in.ID, map[string]any{"root": root, "x": x}); err != nil {
			return err
		}
		blocks[in.ID] = x
		in.AddrBlock = x
		return writeJSON(filepath.Join(root, addrBlocksFile), blocks)
	})
}

// readBlocks reads the allocation file, dropping instances that are gone.
func readBlocks(root string) (map[string]int, error) {
	blocks := map[string]int{}
	data, err := os.ReadFile(filepath.Join(root, addrBlocksFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &blocks); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(root, addrBlocksFile), err)
		}
	}
	for id := range blocks {
		if _, err := os.Stat(filepath.Join(root, id)); errors.Is(err, fs.ErrNotExist) {
			delete(blocks, id)
		}
	}
	return blocks, nil
}

// machineNets are the IPv4 networks of the machine's own namespace that a
// lab block must not shadow (a default route overlaps everything and is
// not counted: lab namespaces never reach the machine's).
func machineNets() ([]*net.IPNet, error) {
	var out []*net.IPNet
	routes, err := netlink.RouteListFiltered(familyV4, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list the machine's routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones > 0 {
				out = append(out, r.Dst)
			}
		}
	}
	addrs, err := netlink.AddrList(nil, familyV4)
	if err != nil {
		return nil, fmt.Errorf("list the machine's addresses: %w", err)
	}
	for _, a := range addrs {
		out = append(out, a.IPNet)
	}
	return out, nil
}

func pickBlock(used map[string]int, busy []*net.IPNet) (int, error) {
	taken := map[int]bool{}
	for _, x := range used {
		taken[x] = true
	}
	n, err := rand.Int(rand.Reader, big.NewInt(254))
	if err != nil {
		return 0, err
	}
	start := int(n.Int64())
	for i := 0; i < 254; i++ {
		x := 1 + (start+i)%254
		if !taken[x] && !overlapsAny(blockNet(x), busy) {
			return x, nil
		}
	}
	return 0, errors.New("no free 10.x.0.0/16 address block for the lab's links (too many labs running?)")
}

func blockNet(x int) *net.IPNet {
	return &net.IPNet{IP: net.IPv4(10, byte(x), 0, 0).To4(), Mask: net.CIDRMask(16, 32)}
}

func overlapsAny(n *net.IPNet, others []*net.IPNet) bool {
	for _, o := range others {
		if n.Contains(o.IP) || o.Contains(n.IP) {
			return true
		}
	}
	return false
}

// releaseBlock removes an instance's entry from the allocation file.
func releaseBlock(data json.RawMessage, id string) error {
	var d struct {
		Root string `json:"root"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("address block record: %w", err)
	}
	root := d.Root
	l, err := lockPath(filepath.Join(root, ".lock"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer l.Close()
	blocks, err := readBlocks(root)
	if err != nil {
		return err
	}
	delete(blocks, id)
	return writeJSON(filepath.Join(root, addrBlocksFile), blocks)
}

// planLinks assigns interface names and addresses to every link end.
func planLinks(lab *labs.Lab, block int) ([]linkPlan, error) {
	next := map[string]int{} // host -> next ethN
	var plans []linkPlan
	for i, l := range lab.Links {
		subnet, err := linkSubnet(l, i, block)
		if err != nil {
			return nil, fmt.Errorf("link %d (%s-%s): %w", i+1, l.A, l.B, err)
		}
		aIP, err := hostAddr(subnet, l.AAddr, 1)
		if err != nil {
			return nil, fmt.Errorf("link %d (%s-%s): a_addr: %w", i+1, l.A, l.B, err)
		}
		bIP, err := hostAddr(subnet, l.BAddr, 2)
		if err != nil {
			return nil, fmt.Errorf("link %d (%s-%s): b_addr: %w", i+1, l.A, l.B, err)
		}
		ones, _ := subnet.Mask.Size()
		p := linkPlan{Index: i, Subnet: subnet}
		p.A = LinkAddress{Link: i, Host: l.A, Peer: l.B, IfName: "eth" + strconv.Itoa(next[l.A]), CIDR: fmt.Sprintf("%s/%d", aIP, ones)}
		next[l.A]++
		p.B = LinkAddress{Link: i, Host: l.B, Peer: l.A, IfName: "eth" + strconv.Itoa(next[l.B]), CIDR: fmt.Sprintf("%s/%d", bIP, ones)}
		next[l.B]++
		plans = append(plans, p)
	}
	return plans, nil
}

func linkSubnet(l labs.Link, i, block int) (*net.IPNet, error) {
	if l.Subnet == "" {
		if i > 255 {
			return nil, errors.New("more than 256 links need explicit subnets")
		}
		return &net.IPNet{IP: net.IPv4(10, byte(block), byte(i), 0).To4(), Mask: net.CIDRMask(24, 32)}, nil
	}
	_, n, err := net.ParseCIDR(l.Subnet)
	if err != nil || n.IP.To4() == nil {
		return nil, fmt.Errorf("subnet %q is not an IPv4 prefix", l.Subnet)
	}
	return n, nil
}

// hostAddr resolves an address given as a full IP, a host number within
// the subnet ("5" or ".5"), or empty (the nth address).
func hostAddr(subnet *net.IPNet, s string, def int) (net.IP, error) {
	num := def
	if s != "" {
		if ip := net.ParseIP(s); ip != nil {
			if !subnet.Contains(ip) {
				return nil, fmt.Errorf("%s is not in %s", s, subnet)
			}
			return ip.To4(), nil
		}
		v, err := strconv.Atoi(trimDot(s))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is neither an address nor a host number", s)
		}
		num = v
	}
	base := binary.BigEndian.Uint32(subnet.IP.To4())
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, base+uint32(num))
	if !subnet.Contains(ip) {
		return nil, fmt.Errorf("host number %d is outside %s", num, subnet)
	}
	return ip, nil
}

func trimDot(s string) string {
	if len(s) > 0 && s[0] == '.' {
		return s[1:]
	}
	return s
}

// addrOf returns host's address on the link shared with peer ("" peer:
// its first link), without the prefix length.
func addrOf(addrs []LinkAddress, host, peer string) (string, bool) {
	for _, a := range addrs {
		if a.Host == host && (peer == "" || a.Peer == peer) {
			ip, _, _ := net.ParseCIDR(a.CIDR)
			return ip.String(), true
		}
	}
	return "", false
}

// linkRecord is the ledger data of one veth pair: enough to delete it.
type linkRecord struct {
	NetNS  string `json:"netns"`
	IfName string `json:"ifname"`
}

// createLinks creates every veth pair from inside host A's namespace with
// the peer placed straight into host B's: nothing ever appears in the
// machine's namespace.
func (in *Instance) createLinks(plans []linkPlan) error {
	for _, p := range plans {
		if err := in.createLink(p); err != nil {
			return err
		}
	}
	for _, h := range in.Hosts {
		if err := in.configureHostNet(h); err != nil {
			return err
		}
	}
	return nil
}

func (in *Instance) createLink(p linkPlan) error {
	ha, err := in.host(p.A.Host)
	if err != nil {
		return err
	}
	hb, err := in.host(p.B.Host)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s/%s-%s/%s", p.A.Host, p.A.IfName, p.B.Host, p.B.IfName)
	if _, err := in.ledger.create(kindLink, name, linkRecord{NetNS: ha.NetNS, IfName: p.A.IfName}); err != nil {
		return err
	}
	return withHandles(ha.NetNS, hb.NetNS, func(h *netlink.Handle, peerNS netns.NsHandle) error {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: p.A.IfName},
			PeerName:      p.B.IfName,
			PeerNamespace: netlink.NsFd(int(peerNS)),
		}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create link %s: %w", name, err)
		}
		return nil
	})
}

// withHandles opens a netlink handle in one namespace and an fd of another.
func withHandles(nsPath, peerPath string, fn func(*netlink.Handle, netns.NsHandle) error) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	peer, err := netns.GetFromPath(peerPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", peerPath, err)
	}
	defer peer.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	return fn(h, peer)
}

func withHandle(nsPath string, fn func(*netlink.Handle) error) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	return fn(h)
}

// configureHostNet brings lo and the host's link ends up with their
// addresses. Routes come later, once every peer is up.
func (in *Instance) configureHostNet(h *sandbox.Host) error {
	return withHandle(h.NetNS, func(nh *netlink.Handle) error {
		if err := linkUp(nh, "lo"); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		for _, a := range in.Addresses {
			if a.Host != h.Name {
				continue
			}
			if err := addAddress(nh, a); err != nil {
				return fmt.Errorf("host %s: %w", h.Name, err)
			}
		}
		return nil
	})
}

func linkUp(nh *netlink.Handle, name string) error {
	l, err := nh.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := nh.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func addAddress(nh *netlink.Handle, a LinkAddress) error {
	l, err := nh.LinkByName(a.IfName)
	if err != nil {
		return fmt.Errorf("find %s: %w", a.IfName, err)
	}
	addr, err := netlink.ParseAddr(a.CIDR)
	if err != nil {
		return err
	}
	if err := nh.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", a.CIDR, a.IfName, err)
	}
	if err := nh.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", a.IfName, err)
	}
	return nil
}

// addRoutes adds every host's declared routes.
func (in *Instance) addRoutes() error {
	if in.Lab == nil {
		return nil
	}
	for _, lh := range in.Lab.Hosts {
		h, err := in.host(lh.Name)
		if err != nil {
			return err
		}
		for _, r := range lh.Routes {
			route, err := in.route(lh.Name, r)
			if err != nil {
				return err
			}
			err = withHandle(h.NetNS, func(nh *netlink.Handle) error { return nh.RouteAdd(route) })
			if err != nil {
				return fmt.Errorf("host %s: route %s via %s: %w", lh.Name, r.To, r.Via, err)
			}
		}
	}
	return nil
}

func (in *Instance) route(host string, r labs.Route) (*netlink.Route, error) {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if r.To != "default" {
		_, n, err := net.ParseCIDR(r.To)
		if err != nil {
			return nil, fmt.Errorf("host %s: route destination %q: want default or a prefix", host, r.To)
		}
		dst = n
	}
	gw := net.ParseIP(r.Via)
	if gw == nil {
		addr, ok := addrOf(in.Addresses, r.Via, host)
		if !ok {
			return nil, fmt.Errorf("host %s: route via %q: not an address nor a host linked to %s", host, r.Via, host)
		}
		gw = net.ParseIP(addr)
	}
	return &netlink.Route{Dst: dst, Gw: gw}, nil
}

// enableForwarding sets net.ipv4.ip_forward=1 in each forwarding host's
// namespace. The sysctl is per namespace and resolved at open time, so a
// locked thread opens it from inside.
func (in *Instance) enableForwarding() error {
	if in.Lab == nil {
		return nil
	}
	for _, lh := range in.Lab.Hosts {
		if !lh.Forward {
			continue
		}
		h, err := in.host(lh.Name)
		if err != nil {
			return err
		}
		if err := inNetNS(h.NetNS, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0)
		}); err != nil {
			return fmt.Errorf("host %s: enable forwarding: %w", lh.Name, err)
		}
	}
	return nil
}

// inNetNS runs fn on a locked thread switched into a namespace. If the
// thread cannot be switched back it stays locked so the runtime retires it.
func inNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// removeLink deletes one end of a veth pair, which deletes both. A gone
// namespace or link is success: the kernel removed it with the namespace.
func removeLink(_ context.Context, data json.RawMessage) error {
	var d linkRecord
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("link record: %w", err)
	}
	if _, err := os.Stat(d.NetNS); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	err := withHandle(d.NetNS, func(nh *netlink.Handle) error {
		l, err := nh.LinkByName(d.IfName)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return nh.LinkDel(l)
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
