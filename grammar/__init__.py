"""The Lark grammar of the .cnn language, shipped as package data."""
