package schemas

// ColumnType is the logical type of a stored column. The Parquet, Arrow and
// ClickHouse adapters each map it to their own types.
type ColumnType int

const (
	ColTimestamp ColumnType = iota // UTC, millisecond precision
	ColString
	ColInt64
	ColInt32
	ColFloat64
	ColBool
	ColBytes // opaque binary (sketches)
)

// Column is one stored column.
type Column struct {
	Name     string
	Type     ColumnType
	Nullable bool
}

// Names of tandem's own columns.
const (
	ColWindowStart    = "window_start"
	ColKafkaPartition = "kafka_partition"
	ColChunk          = "chunk"
	ColVersion        = "version"
	ColRaw            = "_raw"
	ColPartition      = "_partition"
	ColOffset         = "_offset"
	ColKafkaTS        = "_kafka_ts"
)

// FieldColumnType is how a declared field is stored.
func FieldColumnType(t FieldType) ColumnType {
	switch t {
	case TypeInt64:
		return ColInt64
	case TypeFloat64:
		return ColFloat64
	case TypeBool:
		return ColBool
	case TypeTimestamp:
		return ColTimestamp
	}
	return ColString
}

// MeasureColumnType is how a measure's Cell is stored (its kind's
// CellShape); a sketch column for an unknown type.
func MeasureColumnType(t MeasureType) Column {
	if k := KindOf(t); k != nil {
		return k.Cell.Column()
	}
	return Column{Type: ColBytes}
}

// RawColumns are the columns of the master dataset of a stream: every
// declared field (nullable, typed), the original JSON, and where the event
// sat in Kafka.
func (s *Stream) RawColumns() []Column {
	cols := make([]Column, 0, len(s.Fields)+4)
	for _, f := range s.Fields {
		cols = append(cols, Column{Name: f.Name, Type: FieldColumnType(f.Type), Nullable: true})
	}
	return append(cols,
		Column{Name: ColRaw, Type: ColString},
		Column{Name: ColPartition, Type: ColInt32},
		Column{Name: ColOffset, Type: ColInt64},
		Column{Name: ColKafkaTS, Type: ColTimestamp},
	)
}

// RowColumns are the columns of a view row, as batch views store them:
// window_start, the dimensions, then one column per measure (Measure.Cell).
// Speed rows add kafka_partition, chunk and version after these.
func (v *View) RowColumns() []Column {
	cols := make([]Column, 0, 1+len(v.Dimensions)+len(v.Measures))
	cols = append(cols, Column{Name: ColWindowStart, Type: ColTimestamp})
	for _, d := range v.Dimensions {
		cols = append(cols, Column{Name: d, Type: ColString})
	}
	for _, m := range v.Measures {
		c := MeasureColumnType(m.Type)
		c.Name = m.Name
		cols = append(cols, c)
	}
	return cols
}

// SQLStateColumn is the name of the column that holds a sketch measure's
// ClickHouse state (State.UniqHLL12, State.TDigest) in view files: the
// measure's name and "__sql_state". It is "" for a measure without one
// (SQLStateNone), which SQL reads from its own column.
func (m *Measure) SQLStateColumn() string {
	if k := m.Kind(); k == nil || k.SQLState == SQLStateNone {
		return ""
	}
	return m.Name + "__sql_state"
}

// StateColumns are the view's SQLStateColumns, in measure order, stored
// after RowColumns in view files: binary, empty when the row has no state.
func (v *View) StateColumns() []Column {
	var cols []Column
	for i := range v.Measures {
		if name := v.Measures[i].SQLStateColumn(); name != "" {
			cols = append(cols, Column{Name: name, Type: ColBytes})
		}
	}
	return cols
}
