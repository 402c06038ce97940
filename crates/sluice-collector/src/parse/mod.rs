//! One parser per exchange: a text frame in, [`Parsed`] out. Pure functions, so
//! every exchange's format is unit-tested without a socket. Frames are routed by a
//! cheap look at one field and then deserialized once into borrowed structs.

pub mod binance;
pub mod bybit;
pub mod okx;
pub mod private;
pub mod upbit;

use sluice_domain::Exchange;

use crate::event::{ParseError, Parsed};

/// Parses one frame of `exchange`.
pub fn parse(exchange: Exchange, text: &str) -> Result<Parsed, ParseError> {
    match exchange {
        Exchange::Upbit => upbit::parse(text),
        Exchange::Bybit => bybit::parse(text),
        Exchange::Binance => binance::parse(text),
        Exchange::Okx => okx::parse(text),
    }
}
