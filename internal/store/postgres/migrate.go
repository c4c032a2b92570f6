package postgres

import "fmt"

// SchemaTooOldError is returned by Open with Options.NoMigrate for a store
// whose schema an older Herald wrote: it must be migrated first (herald
// store migrate), at a time the operator chooses, since every node shares
// it.
type SchemaTooOldError struct {
	Path      string // the database, as a URL without its password
	Version   int    // schema version of the database
	Supported int    // the schema version this program writes
}

// Error says what to do: migrate.
func (e *SchemaTooOldError) Error() string {
	return fmt.Sprintf("store %s: schema version %d is older than this herald's (%d); run herald store migrate", e.Path, e.Version, e.Supported)
}

// SchemaVersions returns the schema version Open found (0 for a store it
// created) and the version of the store now.
func (s *Store) SchemaVersions() (from, to int) {
	return s.schemaFrom, len(schema)
}
