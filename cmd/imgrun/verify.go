package main

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/internal/progress"
	"github.com/imgrun/imgrun/pkg/layers"
)

func (a *app) verifyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every cached blob; remove the corrupt ones (exit 1 if any was corrupt or missing)",
		Long: `Re-hash every blob in the cache. A blob whose bytes do not match its digest is reported
and removed, so that the next pull fetches it again. Blobs that cached images need but that are missing are
reported too. The exit status is 1 when any blob was corrupt or missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := a.openStore()
			if err != nil {
				return fail("verify", err)
			}
			rep, err := st.Verify(cmd.Context())
			if err != nil {
				return fail("verify", err)
			}
			for _, d := range rep.Corrupt {
				fmt.Fprintf(a.stdout, "corrupt, removed: %s\n", d)
			}
			// A corrupt blob that was just removed is also missing now; say it once.
			var missing []layers.MissingBlob
			for _, m := range rep.Missing {
				if !slices.Contains(rep.Corrupt, m.Digest) {
					missing = append(missing, m)
					fmt.Fprintf(a.stdout, "missing: %s (needed by %s)\n", m.Digest, m.Ref)
				}
			}
			fmt.Fprintf(a.stdout, "checked %d blobs (%s): %d corrupt, %d missing\n",
				rep.Checked, progress.FormatBytes(rep.Bytes), len(rep.Corrupt), len(missing))
			if len(rep.Corrupt) > 0 || len(missing) > 0 {
				return &exitError{code: exitVerifyFound, msg: fmt.Sprintf(
					"verify: %d corrupt blobs removed, %d missing; pull the affected images again", len(rep.Corrupt), len(missing))}
			}
			return nil
		},
	}
}
