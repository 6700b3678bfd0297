;; Never returns: both hooks spin forever. The host must stop it with fuel and fall back.
(module
  (memory (export "memory") 1)
  (func (export "llorch_abi_version") (result i32) (i32.const 0x10000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func $spin (result i64) (loop $forever (br $forever)) (i64.const 0))
  (func (export "llorch_admit") (param i32 i32) (result i64) (call $spin))
  (func (export "llorch_place") (param i32 i32) (result i64) (call $spin))
)
