package app

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// A node does not migrate the schema every node shares: herald serve on a
// PostgreSQL store of an older schema version refuses to start (exit 78,
// saying to run herald store migrate) and leaves it as it was; on an
// empty schema it creates the store.
func TestNewRefusesOlderSharedSchema(t *testing.T) {
	t.Parallel()
	schema, dsn := pgtest.NewSchema(t)
	cfg := goodConfig(filepath.Join(t.TempDir(), "data"))
	cfg.Store.URL = dsn
	a, err := New(cfg, quiet())
	if err != nil {
		t.Fatalf("New on an empty schema: %v", err)
	}
	stop(t, a)
	pgtest.Exec(t, `UPDATE `+pgx.Identifier{schema}.Sanitize()+`.schema_version SET version = version - 1`)
	_, err = New(cfg, quiet())
	var tooOld *postgres.SchemaTooOldError
	if exitcode.Of(err, -1) != exitcode.Config || !errors.As(err, &tooOld) || !strings.Contains(fmt.Sprint(err), "run herald store migrate") {
		t.Errorf("New on an older schema: status %d, %v; want %d and a SchemaTooOldError saying to migrate", exitcode.Of(err, -1), err, exitcode.Config)
	}
	if v := pgtest.Query[int32](t, `SELECT version FROM `+pgx.Identifier{schema}.Sanitize()+`.schema_version`); int(v) != postgres.SchemaVersion()-1 {
		t.Errorf("the refused start changed the schema version to %d", v)
	}
}
