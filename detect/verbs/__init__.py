"""The application verbs over the library: eval (evaluate weights), predict (run, outputs, labels), shelf rows, output rules."""
