package postgres

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// A store of an older schema version is migrated by Open, but refused with
// NoMigrate (a serving node, a command): the shared schema changes only
// through herald store migrate. A new store is created either way. Not
// parallel: it shortens the package's list of migrations meanwhile.
func TestOpenOlderSchema(t *testing.T) {
	dsn := newSchema(t)
	full := schema
	schema = full[:len(full)-1]
	old, err := Open(context.Background(), dsn, Options{Logger: slog.New(slog.DiscardHandler)})
	schema = full
	if err != nil {
		t.Fatal(err)
	}
	if from, _ := old.SchemaVersions(); from != 0 {
		t.Fatalf("new store: found version %d, want 0", from)
	}
	old.Close()
	where := pgx.Identifier{searchPath(t, dsn)}.Sanitize() + `.schema_version`

	_, err = Open(context.Background(), dsn, Options{Logger: slog.New(slog.DiscardHandler), NoMigrate: true})
	var tooOld *SchemaTooOldError
	if !errors.As(err, &tooOld) || tooOld.Version != len(full)-1 || tooOld.Supported != len(full) {
		t.Fatalf("Open with NoMigrate: %v, want SchemaTooOldError %d < %d", err, len(full)-1, len(full))
	}
	if v := pgtest.Query[int32](t, `SELECT version FROM `+where); int(v) != len(full)-1 {
		t.Fatalf("schema version after the refused Open: %d", v)
	}

	s := openTest(t, dsn, Options{})
	defer s.Close()
	if from, to := s.SchemaVersions(); from != len(full)-1 || to != len(full) {
		t.Errorf("migrated: versions %d -> %d, want %d -> %d", from, to, len(full)-1, len(full))
	}
	if v := pgtest.Query[int32](t, `SELECT version FROM `+where); int(v) != len(full) {
		t.Errorf("schema version after the migration: %d", v)
	}

	fresh := openTest(t, newSchema(t), Options{NoMigrate: true})
	defer fresh.Close()
	if !fresh.Created() {
		t.Error("NoMigrate did not create a new store")
	}
}
