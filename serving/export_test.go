package serving

// SetUseLevels turns answering from the run's coarse levels on or off (off:
// every answer from the base rows) and returns a function restoring the
// setting; tests compare both paths with it, benchmarks use it for a
// baseline. Not for concurrent use with queries.
func SetUseLevels(on bool) (restore func()) {
	old := useLevels
	useLevels = on
	return func() { useLevels = old }
}

// SetUsePushdown turns computing top N in ClickHouse on or off (off: every
// top N merged in serving) and returns a function restoring the setting;
// tests compare both paths with it. Not for concurrent use with queries.
func SetUsePushdown(on bool) (restore func()) {
	old := usePushdown
	usePushdown = on
	return func() { usePushdown = old }
}

// SetUseBucketCache turns the bucket cache on or off (off: every answer's
// batch half merged from the run's rows) and returns a function restoring
// the setting; tests compare both paths with it. Not for concurrent use
// with queries.
func SetUseBucketCache(on bool) (restore func()) {
	old := useBucketCache
	useBucketCache = on
	return func() { useBucketCache = old }
}
