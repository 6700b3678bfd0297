;; Declares plugin ABI 2.0: a major this host does not speak. Must be refused at load.
(module
  (memory (export "memory") 1)
  (func (export "llorch_abi_version") (result i32) (i32.const 0x20000))
  (func (export "llorch_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "llorch_admit") (param i32 i32) (result i64) (i64.const 0))
)
