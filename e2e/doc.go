// Package e2e holds whole-platform tests: real ClickHouse, a Kafka-protocol
// broker and MinIO (started by internal/testenv), and every tandem component
// running as its own `tandem` process, driven through the public HTTP APIs
// and ClickHouse's merged SQL view, the way users reach them.
//
// The tests compute their expected answers independently, with plain Go
// maps over the events the gateway acknowledged, and never from tandem's
// own aggregation code.
//
//   - TestExactness (in `make test`): load with late, duplicate and invalid
//     events while batch runs come and go; every query answer equals the
//     truth at several granularities, group-bys and filters, through the
//     REST API and through ClickHouse.
//   - TestChaos (`make chaos`, `make chaos-short`): a soak run under load
//     while a driver kill -9s every component, takes ClickHouse and S3 down
//     and restarts the broker, while the checked view's definition changes
//     (a new version) and a view is added; nothing acknowledged is lost or
//     counted twice, and no REST or analyst SQL answer was silently wrong,
//     on the old version before the switch or the new one after.
//   - TestOverload: the gateway past its in-flight limit rejects quickly,
//     keeps its memory bounded and loses nothing it acknowledged.
//   - TestHostileInput and the Fuzz targets: hostile requests get a clear
//     4xx and change nothing.
package e2e
