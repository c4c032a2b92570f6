package dmarcreport

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Load reads the reports an earlier Herald kept as JSON files under
// dir/DOMAIN/ (one file per report), for domain ("" for all domains).
// Reports are kept in the store now; Load serves their one-time import.
func Load(dir, domain string) ([]*Report, error) {
	pattern := filepath.Join(dir, "*", "*.json")
	if domain != "" {
		pattern = filepath.Join(dir, unsafeName.ReplaceAllString(strings.ToLower(domain), "_"), "*.json")
	}
	files, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	var out []*Report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, &r)
	}
	return out, nil
}
