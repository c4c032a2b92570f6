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

// Save writes rep as JSON under dir/DOMAIN/, atomically, named by its
// period, reporter and ID so the same report received twice is stored once.
func Save(dir string, rep *Report) error {
	domain := unsafeName.ReplaceAllString(strings.ToLower(rep.Policy.Domain), "_")
	if domain == "" || strings.HasPrefix(domain, ".") {
		return fmt.Errorf("report without a usable policy domain %q", rep.Policy.Domain)
	}
	d := filepath.Join(dir, domain)
	if err := os.MkdirAll(d, 0o750); err != nil {
		return err
	}
	name := fmt.Sprintf("%s_%s_%s.json", rep.Begin.UTC().Format("20060102T150405"),
		unsafeName.ReplaceAllString(rep.OrgName, "_"), unsafeName.ReplaceAllString(rep.ReportID, "_"))
	if len(name) > 200 {
		name = name[:200] + ".json"
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(d, name))
}

// Load reads the reports Save kept in dir for domain ("" for all
// domains).
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
