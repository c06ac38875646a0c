/// The kernel layer hands out and takes the model's values: importing it brings them along.
@_exported import FlowModel
