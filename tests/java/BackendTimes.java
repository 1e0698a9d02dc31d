import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.text.SimpleDateFormat;
import java.time.Instant;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.TimeZone;

/**
 * Parses times with the Essedum backend's own formatters, one request a line, and prints the instant
 * in microseconds since the epoch (or "ERROR <reason>"). Run as `java BackendTimes.java`.
 *
 * "status<TAB>started<TAB>timestamp": ICIPRemoteLoggerService's finish time, started + timestamp seconds.
 * "record<TAB>text": ICIPModelAWSServiceSageMaker's createdOn/syncDate parse (read here in UTC).
 */
public class BackendTimes {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] parts = line.split("\t", -1);
            try {
                if (parts[0].equals("status")) {
                    DateTimeFormatter submittedFormatter = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSSSSSXXX");
                    ZonedDateTime submittedDateTime = ZonedDateTime.parse(parts[1], submittedFormatter);
                    double timestampMillis = Double.parseDouble(parts[2]) * 1000;
                    ZonedDateTime plusNanos = submittedDateTime.plusNanos((long) (timestampMillis * 1_000_000L));
                    Instant finish = plusNanos.toInstant();
                    System.out.println(finish.getEpochSecond() * 1_000_000L + finish.getNano() / 1000);
                } else {
                    SimpleDateFormat formatter = new SimpleDateFormat("yyyy-MM-dd HH-mm-ss");
                    formatter.setTimeZone(TimeZone.getTimeZone("UTC"));
                    System.out.println(formatter.parse(parts[1]).getTime() * 1000L);
                }
            } catch (Exception e) {
                System.out.println("ERROR " + e.getClass().getSimpleName() + ": " + e.getMessage());
            }
        }
    }
}
