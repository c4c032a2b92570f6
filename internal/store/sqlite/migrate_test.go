package sqlite

import (
	"testing"
)

// Open migrates a database of an older version and says from which. Not
// parallel: it shortens the package's list of migrations meanwhile.
func TestSchemaVersions(t *testing.T) {
	dir := t.TempDir()
	full := schema
	schema = full[:len(full)-1]
	old, err := Open(dir, Options{})
	schema = full
	if err != nil {
		t.Fatal(err)
	}
	if from, _ := old.SchemaVersions(); from != 0 {
		t.Fatalf("new database: found version %d, want 0", from)
	}
	old.Close()
	s := openTest(t, dir, Options{})
	defer s.Close()
	if from, to := s.SchemaVersions(); from != len(full)-1 || to != len(full) {
		t.Errorf("migrated: versions %d -> %d, want %d -> %d", from, to, len(full)-1, len(full))
	}
	s2 := openTest(t, dir, Options{})
	defer s2.Close()
	if from, to := s2.SchemaVersions(); from != len(full) || to != len(full) {
		t.Errorf("current: versions %d -> %d", from, to)
	}
}
