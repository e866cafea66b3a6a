fn main() {
    println!("ws2http-bench: work in progress");
}
