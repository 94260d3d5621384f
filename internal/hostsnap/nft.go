package hostsnap

import (
	"bytes"
	"fmt"
	"os/exec"
)

// takeNftables records the machine's own nftables ruleset, so a lab whose
// firewall rule leaked out of its host's network namespace is caught.
// Without an nft binary there is nothing a lab could have used to add a
// rule either, and the field stays empty.
func takeNftables(s *Snapshot) error {
	nft, err := exec.LookPath("nft")
	if err != nil {
		return nil
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(nft, "list", "ruleset")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft list ruleset: %w: %s", err, bytes.TrimSpace(errOut.Bytes()))
	}
	s.Nftables = out.String()
	return nil
}
