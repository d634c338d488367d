"""Drop-in patches that run outside libraries' models on detrx's ops."""
