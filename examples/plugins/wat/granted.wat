;; Needs grants `clock` and `random`: rejects with a reason made of the clock's nanoseconds
;; and 8 random bytes, both as little-endian hex (32 characters), so tests can check that the
;; clock is the snapshot's now_ms and that randomness is a function of the snapshot.
(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "0123456789abcdef")
  (data (i32.const 64) "{\"decision\":\"reject\",\"reason\":\"")
  ;; answer = prefix (31) + 32 hex + "\"}" (2) = 65 bytes at 64
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func $hex (param $src i32) (param $dst i32)
    (local $i i32) (local $b i32)
    (loop $next
      (local.set $b (i32.load8_u (i32.add (local.get $src) (local.get $i))))
      (i32.store8 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1)))
                  (i32.load8_u (i32.shr_u (local.get $b) (i32.const 4))))
      (i32.store8 (i32.add (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1))) (i32.const 1))
                  (i32.load8_u (i32.and (local.get $b) (i32.const 15))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 8)))))
  (func (export "llorch_admit") (param i32 i32) (result i64)
    (if (call $clock (i32.const 0) (i64.const 1) (i32.const 256)) (then unreachable))
    (if (call $random (i32.const 264) (i32.const 8)) (then unreachable))
    (call $hex (i32.const 256) (i32.const 95))
    (call $hex (i32.const 264) (i32.const 111))
    (i32.store8 (i32.const 127) (i32.const 34))
    (i32.store8 (i32.const 128) (i32.const 125))
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 65)))
)
