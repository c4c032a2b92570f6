package sqlite

// SchemaVersions returns the schema version Open found (0 for a database
// it created) and the version of the database now: Open migrates the
// embedded store to the newest schema it knows.
func (s *Store) SchemaVersions() (from, to int) {
	return s.schemaFrom, len(schema)
}
