"""The pure domain of oprun: records, status machines, parameters, errors. No I/O."""
