;; Allocates without bound: grows memory one page at a time until refused, then traps.
;; The host's memory limit must refuse the growth and fall back.
(module
  (memory (export "memory") 1)
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func $hog (result i64)
    (loop $more
      (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
      (br $more))
    (i64.const 0))
  (func (export "llorch_admit") (param i32 i32) (result i64) (call $hog))
  (func (export "llorch_place") (param i32 i32) (result i64) (call $hog))
)
