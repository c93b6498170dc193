// Package cond describes the condition of a conditional increment, shared by
// the plain and the instance-aware counters and by their Lua scripts.
package cond

import (
	"errors"
	"fmt"
)

// Op compares a counter's total with an operand.
type Op int

// The comparisons. The zero Op is invalid, so a forgotten field is caught.
const (
	Eq Op = iota + 1 // total == operand
	Ne               // total != operand
	Lt               // total < operand
	Le               // total <= operand
	Gt               // total > operand
	Ge               // total >= operand
)

// ErrInvalidCond is returned for a Cond whose Op is not one of the constants.
var ErrInvalidCond = errors.New("headcount: invalid condition")

var names = [...]string{Eq: "eq", Ne: "ne", Lt: "lt", Le: "le", Gt: "gt", Ge: "ge"}

// String returns the name the Lua scripts use for the comparison.
func (o Op) String() string {
	if o < Eq || o > Ge {
		return fmt.Sprintf("Op(%d)", int(o))
	}
	return names[o]
}

// Cond is a comparison of the counter's total, taken before the change,
// against Operand.
type Cond struct {
	Op      Op
	Operand int64
}

// Check returns an error wrapping ErrInvalidCond when c.Op is unknown.
func (c Cond) Check() error {
	if c.Op < Eq || c.Op > Ge {
		return fmt.Errorf("%w: unknown operator %d", ErrInvalidCond, int(c.Op))
	}
	return nil
}

// Holds evaluates the condition for total in Go; the scripts do the same in
// Lua. Used by tests and by callers that already know the total.
func (c Cond) Holds(total int64) bool {
	switch c.Op {
	case Eq:
		return total == c.Operand
	case Ne:
		return total != c.Operand
	case Lt:
		return total < c.Operand
	case Le:
		return total <= c.Operand
	case Gt:
		return total > c.Operand
	case Ge:
		return total >= c.Operand
	}
	return false
}
