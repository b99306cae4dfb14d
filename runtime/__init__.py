"""cnnc runtime: executes compiled plans. It reads the plan format only, never the compiler IR."""
