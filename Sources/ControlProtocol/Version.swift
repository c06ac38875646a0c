/// The version both executables report.
public enum CtsyncVersion {
    public static let string = "0.1.0"
}
