package keyspace

import (
	"strconv"
	"strings"
)

// Slots is the number of hash slots of a Redis Cluster.
const Slots = 16384

// Slot returns the Redis Cluster hash slot of a key: CRC16 (XMODEM) of its
// hash tag, or of the whole key when it has none, modulo Slots.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % Slots
}

// TagIn returns a short hash tag whose slot is in [lo, hi]; ok is false
// for an empty range.
func TagIn(lo, hi int) (tag string, ok bool) {
	if lo > hi || lo < 0 || hi >= Slots {
		return "", false
	}
	// Slots spread evenly, so a range of n slots takes about Slots/n tries.
	for i := 0; ; i++ {
		tag = strconv.Itoa(i)
		if s := Slot(tag); s >= lo && s <= hi {
			return tag, true
		}
	}
}

// Spread returns n counter keys, prefix followed by a number, whose main
// keys hash to n different parts of the slot space: the i-th to a slot in
// [i*Slots/n, (i+1)*Slots/n). A group split over them is spread over the
// masters of a cluster whose masters serve ranges of slots, as
// redis-cli --cluster create assigns them. The keys depend on the
// space's prefix only, so every node of a namespace gets the same ones.
func (s Space) Spread(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range n {
		lo, hi := i*Slots/n, (i+1)*Slots/n
		// Slots spread evenly, so a part takes about n tries.
		for j := 0; ; j++ {
			k := prefix + strconv.Itoa(j)
			if sl := Slot(s.Key(k)); sl >= lo && sl < hi {
				keys[i] = k
				break
			}
		}
	}
	return keys
}
