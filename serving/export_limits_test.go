package serving

import "time"

// SetSpeedTimeout replaces the speed half's time budget and returns a
// function restoring it; tests use it to reach the overload verdict
// without waiting 15 s.
func SetSpeedTimeout(d time.Duration) (restore func()) {
	old := speedTimeout
	speedTimeout = d
	return func() { speedTimeout = old }
}
