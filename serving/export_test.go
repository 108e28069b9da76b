package serving

// SetRollupLevels replaces the rollup levels (nil turns rollups off) and
// returns a function restoring them; benchmarks use it for a baseline.
func SetRollupLevels(levels []int64) (restore func()) {
	old := rollupLevels
	rollupLevels = levels
	return func() { rollupLevels = old }
}
