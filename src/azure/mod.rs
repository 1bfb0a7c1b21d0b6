//! The Azure ML REST client: the only code that knows URLs, api-versions and wire JSON.
