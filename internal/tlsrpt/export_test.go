package tlsrpt

// SetMaxPending lowers an Aggregator's bound for a test.
func SetMaxPending(a *Aggregator, n int) {
	a.mu.Lock()
	a.maxPending = n
	a.mu.Unlock()
}
