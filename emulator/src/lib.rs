//! An emulator of the Azure Machine Learning control plane and scoring plane.
#![forbid(unsafe_code)]
