package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/internal/progress"
	"github.com/imgrun/imgrun/pkg/registry"
)

// imageRow is one line of `imgrun images`, and one object of `imgrun images --json`.
type imageRow struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	Index     string `json:"index,omitempty"`
	Platform  string `json:"platform"`
	Size      int64  `json:"size"` // sum of the (compressed) layer sizes
}

func (a *app) imagesCommand() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "images [--json]",
		Short: "List cached images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := a.openStore()
			if err != nil {
				return fail("images", err)
			}
			recs, err := st.Images(ctx)
			if err != nil {
				return fail("images", err)
			}
			rows := make([]imageRow, 0, len(recs))
			for _, rec := range recs {
				row := imageRow{Reference: rec.Ref, Digest: rec.Descriptor.Digest.String(),
					Index: rec.Index.String(), Platform: registry.FormatPlatform(rec.Platform)}
				// Size needs the manifest; an entry whose blobs went missing still lists, size -1.
				row.Size = -1
				if img, err := st.Load(ctx, rec); err == nil {
					row.Size = img.Size()
				}
				rows = append(rows, row)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return fail("images", enc.Encode(rows))
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "REFERENCE\tDIGEST\tPLATFORM\tSIZE")
			for _, r := range rows {
				size := "?"
				if r.Size >= 0 {
					size = progress.FormatBytes(r.Size)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Reference, progress.ShortID(r.Digest), r.Platform, size)
			}
			return fail("images", tw.Flush())
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}
