;; Answers garbage, chosen by the task's tenant, so one module covers every malformed case:
;;  "json"  -> bytes that are not JSON          "oob"  -> a pointer outside memory
;;  "huge"  -> a 2 GiB answer length            "extra" -> an admit with an unknown field
;;  "long"  -> a reject whose reason is 300 bytes   other -> truncated JSON
;; Placement always names replica "nope", which is never a candidate.
;; Every case must end in the built-in decision, never in a panic.
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "\"tenant\":\"json\"") ;; T_JSON
  (data (i32.const 16) "\"tenant\":\"oob\"") ;; T_OOB
  (data (i32.const 32) "\"tenant\":\"huge\"") ;; T_HUGE
  (data (i32.const 48) "\"tenant\":\"extra\"") ;; T_EXTRA
  (data (i32.const 64) "\"tenant\":\"long\"") ;; T_LONG
  (data (i32.const 80) "not json{") ;; NOT_JSON
  (data (i32.const 96) "{\"decision\":\"admit\",\"extra\":1}") ;; EXTRA
  (data (i32.const 128) "{\"decision\":\"reject\",\"reason\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}") ;; LONG
  (data (i32.const 464) "{\"decision\":\"admit\"") ;; TRUNC
  (data (i32.const 496) "{\"decision\":\"place\",\"replica_id\":\"nope\"}") ;; NONCAND
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 2048))
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
  (func $find (param $from i32) (param $end i32) (param $lit i32) (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (local.get $from))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $p) (local.get $n)) (local.get $end)))
        (if (call $starts_with (local.get $p) (local.get $lit) (local.get $n))
          (then (return (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (i32.const -1))
  (func $answer (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))
  (func (export "llorch_admit") (param $ptr i32) (param $len i32) (result i64)
    (local $end i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.ge_s (call $find (local.get $ptr) (local.get $end) (i32.const 0) (i32.const 15)) (i32.const 0))
      (then (return (call $answer (i32.const 80) (i32.const 9)))))
    (if (i32.ge_s (call $find (local.get $ptr) (local.get $end) (i32.const 16) (i32.const 14)) (i32.const 0))
      (then (return (call $answer (i32.const 2147418112) (i32.const 16)))))
    (if (i32.ge_s (call $find (local.get $ptr) (local.get $end) (i32.const 32) (i32.const 15)) (i32.const 0))
      (then (return (call $answer (i32.const 0) (i32.const 2147483647)))))
    (if (i32.ge_s (call $find (local.get $ptr) (local.get $end) (i32.const 48) (i32.const 16)) (i32.const 0))
      (then (return (call $answer (i32.const 96) (i32.const 30)))))
    (if (i32.ge_s (call $find (local.get $ptr) (local.get $end) (i32.const 64) (i32.const 15)) (i32.const 0))
      (then (return (call $answer (i32.const 128) (i32.const 333)))))
    (call $answer (i32.const 464) (i32.const 19)))
  (func (export "llorch_place") (param i32 i32) (result i64)
    (call $answer (i32.const 496) (i32.const 40)))
)
