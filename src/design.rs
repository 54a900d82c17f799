#![doc = include_str!("design.md")]
