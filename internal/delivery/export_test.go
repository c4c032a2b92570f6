package delivery

// SetPipelining turns outbound PIPELINING on (the default) or off, for
// tests and benchmarks that compare it with lock-step.
func SetPipelining(c *Client, on bool) { c.noPipelining = !on }
