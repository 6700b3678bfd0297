;; A well-behaved policy plugin in WebAssembly text, for tests that cannot build Rust to wasm.
;; ABI 1.0 (docs/plugins.md). It makes real decisions from the JSON snapshot:
;;  - admission: tenant "blocked" is rejected, tenant "bulk" is reprioritized to batch,
;;    everyone else is admitted;
;;  - placement: the candidate replica with the most free slots (first one on ties), or
;;    defer when there is no candidate.
;; JSON is scanned, not parsed: it relies on the host's serialization (the SDK's field order,
;; no whitespace), which is fine for a test plugin and wrong for a real one (use the SDK).
(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 1024))

  ;; TENANT_BLOCKED @ 0, 18 bytes
  (data (i32.const 0) "\"tenant\":\"blocked\"")
  ;; TENANT_BULK @ 32, 15 bytes
  (data (i32.const 32) "\"tenant\":\"bulk\"")
  ;; ADMIT @ 48, 20 bytes
  (data (i32.const 48) "{\"decision\":\"admit\"}")
  ;; REJECT @ 80, 57 bytes
  (data (i32.const 80) "{\"decision\":\"reject\",\"reason\":\"tenant blocked by policy\"}")
  ;; REPRIO @ 144, 46 bytes
  (data (i32.const 144) "{\"decision\":\"reprioritize\",\"priority\":\"batch\"}")
  ;; KEY_ID @ 192, 14 bytes
  (data (i32.const 192) "\"replica_id\":\"")
  ;; CAND_TRUE @ 208, 17 bytes
  (data (i32.const 208) ",\"candidate\":true")
  ;; KEY_TOTAL @ 240, 14 bytes
  (data (i32.const 240) "\"slots_total\":")
  ;; KEY_BUSY @ 256, 13 bytes
  (data (i32.const 256) "\"slots_busy\":")
  ;; PLACE_PRE @ 272, 34 bytes
  (data (i32.const 272) "{\"decision\":\"place\",\"replica_id\":\"")
  ;; PLACE_POST @ 320, 2 bytes
  (data (i32.const 320) "\"}")
  ;; DEFER @ 336, 20 bytes
  (data (i32.const 336) "{\"decision\":\"defer\"}")

  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))

  ;; Bump allocator; grows memory when needed and traps if it cannot.
  (func $alloc (export "llorch_alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $need i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 7))
                               (i32.const -8)))
    (local.set $need (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (i32.div_u (i32.add (local.get $need) (i32.const 65535))
                                            (i32.const 65536)))
                    (i32.const -1))
          (then unreachable))))
    (local.get $ptr))

  ;; Does memory at $p start with the $n bytes at $lit?
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

  ;; First position >= $from and < $end where the literal starts, or -1.
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

  ;; Unsigned decimal at $p.
  (func $parse_u32 (param $p i32) (result i32)
    (local $v i32) (local $c i32)
    (block $done
      (loop $next
        (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $c) (i32.const 9)))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $c)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $v))

  (func $answer (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))

  (func (export "llorch_admit") (param $ptr i32) (param $len i32) (result i64)
    (local $end i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.ge_s (call $find (local.get $ptr) (local.get $end) (i32.const 0) (i32.const 18))
                  (i32.const 0))
      (then (return (call $answer (i32.const 80) (i32.const 57)))))
    (if (i32.ge_s (call $find (local.get $ptr) (local.get $end) (i32.const 32) (i32.const 15))
                  (i32.const 0))
      (then (return (call $answer (i32.const 144) (i32.const 46)))))
    (call $answer (i32.const 48) (i32.const 20)))

  (func (export "llorch_place") (param $ptr i32) (param $len i32) (result i64)
    (local $end i32) (local $pos i32) (local $id i32) (local $id_end i32)
    (local $free i32) (local $best_free i32) (local $best_id i32) (local $best_len i32)
    (local $at i32) (local $out i32) (local $out_len i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $pos (local.get $ptr))
    (local.set $best_free (i32.const -1))
    (block $done
      (loop $replica
        ;; "replica_id":"<id>"
        (local.set $at (call $find (local.get $pos) (local.get $end) (i32.const 192) (i32.const 14)))
        (br_if $done (i32.lt_s (local.get $at) (i32.const 0)))
        (local.set $id (i32.add (local.get $at) (i32.const 14)))
        (local.set $id_end (local.get $id))
        (block $q
          (loop $scan
            (br_if $q (i32.ge_u (local.get $id_end) (local.get $end)))
            (br_if $q (i32.eq (i32.load8_u (local.get $id_end)) (i32.const 34)))
            (local.set $id_end (i32.add (local.get $id_end) (i32.const 1)))
            (br $scan)))
        (local.set $pos (local.get $id_end))
        ;; free = slots_total - slots_busy (both follow the id within this replica object)
        (local.set $at (call $find (local.get $pos) (local.get $end) (i32.const 240) (i32.const 14)))
        (br_if $done (i32.lt_s (local.get $at) (i32.const 0)))
        (local.set $free (call $parse_u32 (i32.add (local.get $at) (i32.const 14))))
        (local.set $at (call $find (local.get $pos) (local.get $end) (i32.const 256) (i32.const 13)))
        (br_if $done (i32.lt_s (local.get $at) (i32.const 0)))
        (local.set $free (i32.sub (local.get $free)
                                  (call $parse_u32 (i32.add (local.get $at) (i32.const 13)))))
        (if (i32.and
              (call $starts_with (i32.add (local.get $id_end) (i32.const 1)) (i32.const 208) (i32.const 17))
              (i32.gt_s (local.get $free) (local.get $best_free)))
          (then
            (local.set $best_free (local.get $free))
            (local.set $best_id (local.get $id))
            (local.set $best_len (i32.sub (local.get $id_end) (local.get $id)))))
        (br $replica)))
    (if (i32.lt_s (local.get $best_free) (i32.const 0))
      (then (return (call $answer (i32.const 336) (i32.const 20)))))
    ;; {"decision":"place","replica_id":"<id>"}
    (local.set $out_len (i32.add (local.get $best_len) (i32.const 36)))
    (local.set $out (call $alloc (local.get $out_len)))
    (memory.copy (local.get $out) (i32.const 272) (i32.const 34))
    (memory.copy (i32.add (local.get $out) (i32.const 34)) (local.get $best_id) (local.get $best_len))
    (memory.copy (i32.add (i32.add (local.get $out) (i32.const 34)) (local.get $best_len))
                 (i32.const 320) (i32.const 2))
    (call $answer (local.get $out) (local.get $out_len)))
)
