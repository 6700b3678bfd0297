;; A plugin that (wrongly) keeps state between calls, to prove the host does not let it:
;; every call must start from a fresh instance. Tenant "crash" scribbles on memory and a global
;; and then traps; any other call admits only if it sees pristine state (global = 0 before it
;; counts itself, flag byte = 0), and otherwise rejects with "state leaked".
(module
  (memory (export "memory") 1)
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 0) "\"tenant\":\"crash\"")
  (data (i32.const 64) "{\"decision\":\"admit\"}")
  (data (i32.const 128) "{\"decision\":\"reject\",\"reason\":\"state leaked\"}")
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func $starts_with (param $p i32) (param $lit i32) (param $n i32) (result i32)
    (local $i i32)
    (block $no
      (loop $next
        (if (i32.ge_u (local.get $i) (local.get $n)) (then (return (i32.const 1))))
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                           (i32.load8_u (i32.add (local.get $lit) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))
  (func (export "llorch_admit") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $end i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $scanned
      (loop $next
        (br_if $scanned (i32.gt_u (i32.add (local.get $p) (i32.const 16)) (local.get $end)))
        (if (call $starts_with (local.get $p) (i32.const 0) (i32.const 16))
          (then
            (global.set $calls (i32.add (global.get $calls) (i32.const 100)))
            (i32.store8 (i32.const 900) (i32.const 1))
            unreachable))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (if (i32.or (i32.ne (global.get $calls) (i32.const 0)) (i32.load8_u (i32.const 900)))
      (then (return (i64.or (i64.shl (i64.const 128) (i64.const 32)) (i64.const 45)))))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store8 (i32.const 900) (i32.const 1))
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 20)))
)
