"""What is not the science: console and progress output, devices, atomic file writes, config differences, plugins."""
